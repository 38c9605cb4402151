print("tandemctl")
