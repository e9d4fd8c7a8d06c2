// `flashinterp map-format`: the map format this binary writes (map/format.h), as JSON or as a
// table of every group, dataset and attribute with its dtype and shape (docs/MAP_FORMAT.md).
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "map/format.h"

namespace fi {

std::function<int()> add_map_format(CLI::App& app) {
  auto* cmd = app.add_subcommand("map-format", "Print the neuron map's format: every group, dataset and attribute");
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "As one JSON object");
  return [json] {
    const nlohmann::json s = map::format_schema();
    if (*json) {
      std::printf("%s\n", s.dump(1).c_str());
      return 0;
    }
    std::printf("%s, format_version %lld ({matrix}: up, gate, down; @: an attribute)\n",
                s["format"].get<std::string>().c_str(), (long long)s["format_version"].get<int64_t>());
    for (const auto& it : s["items"])
      std::printf("  %-36s %-9s %-32s %-10s %s\n", it["path"].get<std::string>().c_str(),
                  it["kind"].get<std::string>().c_str(), it["dtype"].get<std::string>().c_str(),
                  it["shape"].get<std::string>().c_str(), it["when"].get<std::string>().c_str());
    return 0;
  };
}

}  // namespace fi
