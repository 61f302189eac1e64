# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["editheader", "index"]; deleteheader :index 1 "received"; if header :index 1 :contains "received" "laptop" { discard; }
