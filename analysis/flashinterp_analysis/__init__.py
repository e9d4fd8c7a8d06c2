"""The analysis tools of flashinterp: show, search, compare and report (the commands
flashinterp-show, -search, -compare, -report; analysis/<tool> in a checkout). The map reader they
share is the module flashinterp_map."""
