# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["vacation", "variables"]; if header :matches "subject" "*" { vacation :subject "Re: ${1}" "Away."; }
