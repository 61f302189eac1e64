# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
# only a comment
/* and a bracket comment */
keep;
