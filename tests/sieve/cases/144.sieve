# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "vacation"; vacation :days 30 :addresses ["bob@example.net"] "Away for a month.";
