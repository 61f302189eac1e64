# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "date"; if date :zone "+0000" "date" "hour" "08" { discard; }
