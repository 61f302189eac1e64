# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "reject"; if header :contains "subject" "meeting" { reject text:
No meetings, please.
Thanks.
.
; }
