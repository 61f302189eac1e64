# message: spam.eml
# from: alice@example.org
# to: bob+work@example.net
require "reject"; if header :is "x-spam-flag" "YES" { reject "spam"; }
