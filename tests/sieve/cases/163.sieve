# message: list.eml
# from: alice@example.org
# to: bob+work@example.net
require "date"; if date :zone "+0000" "date" "day" "03" { discard; }
