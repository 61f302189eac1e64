# message: spam.eml
# from: alice@example.org
# to: bob+work@example.net
require "fileinto"; if header :is "x-spam-flag" "YES" { fileinto "Junk"; }
