from lmmsae.cli import main

main()
