# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "reject"; reject "I do not want this";
