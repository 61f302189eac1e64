# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "envelope"; if envelope :is "from" "alice@example.org" { discard; }
