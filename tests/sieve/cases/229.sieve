# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["relational", "comparator-i;ascii-numeric"]; if header :matches :comparator "i;ascii-numeric" "x-count" "4*" { discard; }
