# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "index"; if header :index 2 :contains "received" "localhost" { discard; }
