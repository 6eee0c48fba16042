from inferofabric.door.process import main

main()
