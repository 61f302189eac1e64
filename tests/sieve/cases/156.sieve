# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "date"; if date :zone "-0500" "date" "time" "03:30:00" { discard; }
