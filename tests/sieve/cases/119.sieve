# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["relational", "comparator-i;ascii-numeric"]; if header :value "gt" :comparator "i;ascii-numeric" "x-count" "40" { discard; }
