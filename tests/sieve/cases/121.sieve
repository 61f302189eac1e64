# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["relational", "comparator-i;ascii-numeric"]; if header :value "eq" :comparator "i;ascii-numeric" "x-priority" "3" { discard; }
