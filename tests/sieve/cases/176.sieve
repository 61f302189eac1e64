# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["include", "variables"]; global "box"; set "box" "FromGlobal"; include "usevar";
