// The texts of emulator/spec/*.json, compiled into the library by CMake (see embedded_specs.cc.in).
#pragma once

#include <string_view>
#include <vector>

namespace stripe_emulator {

const std::vector<std::string_view>& embedded_specs();

}  // namespace stripe_emulator
