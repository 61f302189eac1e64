# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "index"; if address :index 2 :is "to" "dave@example.net" { discard; }
