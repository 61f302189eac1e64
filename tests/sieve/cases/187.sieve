# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "editheader"; deleteheader "x-priority"; if exists "x-priority" { discard; }
