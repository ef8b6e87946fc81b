from worktree_runner.entry import main

main()
