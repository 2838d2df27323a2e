package data_test

import (
	"fmt"
	"log"

	"github.com/autoprune/autoprune/data"
)

func ExampleLoadMNIST() {
	train, test, err := data.LoadMNIST()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %d images of %dx%dx%d, first label %d\n", train.Name, train.N, train.C, train.H, train.W, train.Labels[0])
	fmt.Printf("%s: %d images of %dx%dx%d, first label %d\n", test.Name, test.N, test.C, test.H, test.W, test.Labels[0])

	fit, val, err := train.Split(0.1, 1)
	if err != nil {
		log.Fatal(err)
	}
	b := data.NewBatcher(fit, 64, true, 1, false)
	fmt.Printf("%d for fitting in %d batches, %d for validation\n", fit.N, b.Len(), val.N)
	// Output:
	// mnist/train: 60000 images of 1x28x28, first label 5
	// mnist/test: 10000 images of 1x28x28, first label 7
	// 54000 for fitting in 844 batches, 6000 for validation
}
