# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["fileinto"]; if header :contains "subject" "meeting" { fileinto "Meetings"; stop; } fileinto "Other";
