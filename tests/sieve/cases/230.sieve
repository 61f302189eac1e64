# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "variables"; set "a" "x@example.com"; redirect "${a}";
