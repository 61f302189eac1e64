# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "date"; if date "date" "century" "20" { keep; }
