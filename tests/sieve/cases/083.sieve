# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["reject", "fileinto"]; fileinto "x"; reject "no";
