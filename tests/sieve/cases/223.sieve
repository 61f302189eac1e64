# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if header :is "subject" text:
Meeting tomorrow at 10
.
{ discard; }
