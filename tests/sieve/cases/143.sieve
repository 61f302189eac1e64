# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "vacation"; vacation :days 1 "Short.";
