# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "comparator-i;ascii-numeric"; if header :contains :comparator "i;ascii-numeric" "subject" "1" { discard; }
