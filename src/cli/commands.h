// The subcommands of `flashinterp`, one file each; main.cpp wires them into CLI11.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace fi {

// Each adds its subcommand to app and returns the function that runs it (exit code).
std::function<int()> add_inspect(CLI::App& app);
std::function<int()> add_demo_model(CLI::App& app);
std::function<int(int*, char***)> add_decode(CLI::App& app);
std::function<int()> add_tokenize(CLI::App& app);
std::function<int(int*, char***)> add_clamp(CLI::App& app);
std::function<int(int*, char***)> add_generate(CLI::App& app);
std::function<int()> add_map_format(CLI::App& app);
std::function<int(int*, char***)> add_sweep(CLI::App& app);

}  // namespace fi
