# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "copy"; redirect :copy "x@example.com";
