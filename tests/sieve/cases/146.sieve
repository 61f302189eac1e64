# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["vacation", "vacation-seconds"]; vacation :seconds 604800 :subject "Week" "One week.";
