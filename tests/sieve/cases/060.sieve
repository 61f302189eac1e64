# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "envelope"; if envelope :domain :is "from" "example.org" { discard; }
