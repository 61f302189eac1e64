# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "envelope"; if envelope :localpart :is "to" "bob+work" { discard; }
