# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "subaddress"; if address :detail :is "cc" "" { discard; }
