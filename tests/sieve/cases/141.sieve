# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "vacation"; vacation "I am on holiday.";
