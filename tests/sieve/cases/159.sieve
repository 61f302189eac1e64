# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "date"; if date :originalzone "date" "month" "06" { discard; }
