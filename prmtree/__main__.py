from prmtree.cli import main

raise SystemExit(main())
