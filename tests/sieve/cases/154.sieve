# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "date"; if date :zone "+0000" "date" "date" "2021-06-01" { discard; }
