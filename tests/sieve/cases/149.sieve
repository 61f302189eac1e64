# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["vacation", "fileinto"]; vacation "Away."; fileinto "Vacation";
