# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "vacation"; vacation :days 2 :days 3 "x";
