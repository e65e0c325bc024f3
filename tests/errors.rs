//! Bad input: each case fails with exit code 1 and names the file, the column and the problem.
