# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "editheader"; deleteheader "received"; if exists "received" { discard; }
