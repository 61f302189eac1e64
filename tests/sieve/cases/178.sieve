# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "include"; include "loop-a";
