OK_FORMAT = True

test = {   'name': 'q3',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.course.feedback import first_failure, stub_result\n'
                                               '>>> _got, _why = stub_result(mask_prompt, [5, 6, 7, 8], 2)\n'
                                               ">>> first_failure((lambda: _why is None, lambda: _why), (lambda: list(_got) == [-100, -100, 7, 8], lambda: f'mask the first prompt_length tokens: "
                                               "expected [-100, -100, 7, 8], got {_got}'), (lambda: list(mask_prompt([1, 2, 3], 0)) == [1, 2, 3], 'with prompt_length 0 nothing is masked: expected "
                                               "[1, 2, 3]'))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
