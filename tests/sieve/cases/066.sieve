# message: plain.eml
# from: x@example.org
# to: bob+work@example.net
require "envelope"; if envelope :is "from" "x@example.org" { discard; }
