# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["fileinto"]; if header :contains "Subject" "meeting" {
  fileinto "a";
}
elsif header :contains "Subject" "x" {
  fileinto "b";
}
