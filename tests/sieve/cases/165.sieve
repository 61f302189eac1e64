# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "index"; if header :index 1 :contains "received" "mx.example.org by mx.example.net" { discard; }
