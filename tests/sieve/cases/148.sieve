# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "vacation"; vacation text:
I am away
until Monday.
.
;
