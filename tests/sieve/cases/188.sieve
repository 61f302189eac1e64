# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "editheader"; deleteheader :contains "received" "laptop"; if header :contains "received" "laptop" { discard; }
