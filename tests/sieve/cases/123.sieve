# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["relational", "comparator-i;ascii-numeric"]; if header :count "ge" :comparator "i;ascii-numeric" "received" "4" { discard; }
