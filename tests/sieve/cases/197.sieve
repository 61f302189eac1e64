# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "environment"; if not environment :is "no-such-item" "x" { discard; }
